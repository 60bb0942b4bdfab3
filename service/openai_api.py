"""OpenAI-compatible routes: ``POST /v1/embeddings`` and ``GET /v1/models`` (+ one model), so
that code written for OpenAI's embeddings API (the ``openai`` client, LangChain's
``OpenAIEmbeddings``, plain HTTP) reaches Tailor by changing only ``base_url`` and ``api_key``.

``model`` is the backbone's name (``GET /v1/models`` lists it, e.g. ``all-MiniLM-L6-v2``:
frozen embeddings, as ``POST /v1/embed``) or an adapter of the caller's tenant, ``name`` or
``name@version``. A LoRA adapter's embeddings come through its weights, in the same batched
forward as every other request's rows; a head-only adapter does not change the encoder, so
its embeddings are the backbone's. The backbone's name always means the backbone (an adapter
of the same name is reached as ``name@version``). Errors on these routes are in OpenAI's
shape (service/errors.py): ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import AdapterNotFound, InvalidRequest, TailorError
from adapters.validation import shorten

from .deps import engine, tenant_of

if TYPE_CHECKING:  # the engine (and torch) load in the worker only: service/service.py
    from adapters import Tailor

openai_router = APIRouter()


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "all-MiniLM-L6-v2", "input": ["where is my refund?", "the app crashed"]}]})

    model: str = Field(..., description="the backbone's name (see GET /v1/models) or one of your "
                       "adapters, `name` or `name@version`: a LoRA adapter gives its tuned "
                       "embeddings, a head-only adapter the backbone's")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="a text or a list of texts (at most TAILOR_MAX_INPUTS); token-id "
        "arrays are refused (422): Tailor tokenizes with the backbone's own tokenizer")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, description="only the model's own size is accepted: "
                                   "the backbone is not trained to be truncated")
    user: str | None = Field(None, description="accepted and ignored")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(..., description="L2-normalised; a base64 string with "
                                         "encoding_format base64")


class Usage(BaseModel):
    prompt_tokens: int = Field(..., description="tokens the backbone read (truncated, with its "
                               "special tokens)")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str = Field(..., description="the backbone's name, or the adapter's name@version")
    usage: Usage


class Model(BaseModel):
    id: str = Field(..., description="what to pass as `model`")
    object: Literal["model"] = "model"
    created: int = Field(..., description="Unix seconds: when the adapter version was created "
                         "(the backbone: the date of its files)")
    owned_by: str = Field(..., description="`tailor` for the backbone, else your tenant")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(..., description="invalid_request_error, authentication_error, "
                      "permission_error, rate_limit_error or server_error")
    param: str | None = Field(None, description="the request field at fault, when one is")
    code: str = Field(..., description="Tailor's error code (model_not_found for an unknown model)")


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


ERRORS = {s: {"model": OpenAIError} for s in (400, 401, 403, 404, 413, 422, 429, 503)}


def _model_ref(t: Tailor, model: str) -> str | None:
    """None for the backbone, else the adapter ref ``model`` names."""
    return None if model == t.encoder.identity.name else model


def _texts(value: str | list) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not value:
        raise _at(InvalidRequest("input is empty: send a text or a non-empty list of texts"), "input")
    if not all(isinstance(v, str) for v in value):
        raise _at(InvalidRequest("input holds token ids; send the texts themselves (Tailor "
                                 "tokenizes with the backbone's tokenizer; with LangChain's "
                                 "OpenAIEmbeddings set check_embedding_ctx_length=False)"), "input")
    return value


def _at(e: TailorError, param: str) -> TailorError:
    e.param = param  # type: ignore[attr-defined]  # OpenAI's `param` (service/errors.py)
    return e


def _not_found(model: str, t: Tailor) -> AdapterNotFound:
    return _at(AdapterNotFound(
        f"model {shorten(model)} does not exist for this key: use the backbone "
        f"{t.encoder.identity.name!r} or one of your adapters (GET /v1/models)"), "model")


@openai_router.post("/embeddings", response_model=EmbeddingsResponse, responses=ERRORS,
                    summary="OpenAI-compatible embeddings: the backbone's or an adapter's")
async def embeddings(req: EmbeddingsRequest, request: Request) -> Response:
    t = engine(request)
    texts = _texts(req.input)
    if req.dimensions is not None and req.dimensions != t.encoder.dim:
        raise _at(InvalidRequest(f"dimensions {req.dimensions} is not supported: this model's "
                                 f"embeddings have {t.encoder.dim}; leave dimensions out"),
                  "dimensions")
    ref = _model_ref(t, req.model)
    try:
        rows, tokens, served = await t.aembed_through(tenant_of(request), ref, texts)
    except AdapterNotFound:
        raise _not_found(req.model, t) from None
    except InvalidRequest as e:
        if e.code == "invalid_name":  # not an adapter name, so no model of this key
            raise _not_found(req.model, t) from None
        raise _at(e, "input")
    except TailorError as e:  # too many inputs (413) is about `input`; 429/503 about no field
        raise _at(e, "input") if e.status == 413 else e
    if req.encoding_format == "base64":
        data = [base64.b64encode(np.asarray(r, dtype="<f4").tobytes()).decode("ascii") for r in rows]
    else:
        data = [r.tolist() for r in rows]
    body = {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": served or t.encoder.identity.name,
            "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}}
    # written by orjson, as /v1/embed (service/api.py `_json`: pydantic re-encoding of the
    # floats costs more than the forward)
    return Response(orjson.dumps(body), media_type="application/json")


def _created(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp())


def _backbone(t: Tailor) -> dict:
    created = int(Path(t.encoder.model_dir, "config.json").stat().st_mtime)
    return {"id": t.encoder.identity.name, "object": "model", "created": created,
            "owned_by": "tailor"}


@openai_router.get("/models", response_model=ModelList, responses=ERRORS,
                   summary="OpenAI-compatible: the backbone and your adapters, as models")
async def list_models(request: Request) -> dict:
    t, tenant = engine(request), tenant_of(request)
    adapters = await asyncio.to_thread(t.list_adapters, tenant)
    return {"object": "list", "data": [_backbone(t), *(
        {"id": a["name"], "object": "model", "created": _created(a["created_at"]),
         "owned_by": tenant} for a in adapters)]}


@openai_router.get("/models/{model}", response_model=Model, responses=ERRORS,
                   summary="OpenAI-compatible: one model (the backbone, or `name`/`name@version`)")
async def get_model(model: str, request: Request) -> dict:
    t, tenant = engine(request), tenant_of(request)
    if _model_ref(t, model) is None:
        return _backbone(t)
    try:
        a = await asyncio.to_thread(t.get_adapter, tenant, model)
    except (AdapterNotFound, InvalidRequest):
        raise _not_found(model, t) from None
    return {"id": model, "object": "model", "created": _created(a["created_at"]), "owned_by": tenant}
