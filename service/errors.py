"""One place that maps errors to HTTP: ``{"error": {"code", "message"}}`` with a 4xx status.

Domain errors carry their status (adapters/errors.py), as do the HTTP-only ones here
(401/403, raised by service/auth.py); request-shape errors come from
pydantic; anything else is a bug and answers 500 ``internal_error`` (and is logged).
"""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import TailorError

log = logging.getLogger("tailor")


class Unauthorized(TailorError):
    """No API key, or one this server does not know (401, with WWW-Authenticate)."""

    status = 401
    code = "unauthorized"


class Forbidden(TailorError):
    """A valid key asked for something only an admin key may do (403)."""

    status = 403
    code = "forbidden"


# The OpenAI-compatible routes (service/openai_api.py) answer errors in OpenAI's shape,
# which their clients parse: Tailor's two fields plus `type` and `param`, and the code
# `model_not_found` where Tailor says `adapter_not_found`.
OPENAI_ROUTES = ("/embeddings", "/models")
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
OPENAI_CODES = {"adapter_not_found": "model_not_found"}


def route_path(scope) -> str:
    """The path inside the v1 app (BentoML mounts it at /v1: ``root_path`` is /v1 then)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def is_openai_route(scope) -> bool:
    path = route_path(scope)
    return path in OPENAI_ROUTES or path.startswith("/models/")


def respond(exc: TailorError, scope=None) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers, scope=scope,
                          param=getattr(exc, "param", None))


def error_response(status: int, code: str, message: str, headers: dict | None = None, *,
                   scope=None, param: str | None = None) -> JSONResponse:
    """Tailor's ``{"error": {"code", "message"}}``; on an OpenAI route (``scope``) OpenAI's
    ``{"error": {"message", "type", "param", "code"}}``."""
    # Messages may quote what the client sent; a lone surrogate from a JSON "\\ud800" escape
    # cannot be encoded as UTF-8 and would turn this answer into a 500: escape it instead.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    body: dict = {"code": code, "message": message}
    if scope is not None and is_openai_route(scope):
        kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"message": message, "type": kind, "param": param,
                "code": OPENAI_CODES.get(code, code) if status == 404 else code}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _loc(part: object) -> str:
    """One step of a pydantic error location; field names come from the client, so cut them."""
    s = str(part)
    return s if len(s) <= 40 else s[:40] + "..."


def describe(errors: list[dict]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(_loc(p) for p in err.get("loc", ()) if p != "body") or "body"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            msg = "unknown field; remove it"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = err.get("msg", "invalid")
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install(app: FastAPI) -> None:
    @app.exception_handler(TailorError)
    async def _domain(request: Request, exc: TailorError) -> JSONResponse:
        return respond(exc, request.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON; send a "
                                  "JSON object with Content-Type: application/json",
                                  scope=request.scope)
        return error_response(422, "invalid_request", "invalid request: " + describe(errors),
                              scope=request.scope, param=_param(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.scope.get("tailor.too_big"):
            return _too_big(request)
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
            return error_response(400, "invalid_json", _unparsable(exc.__cause__), scope=request.scope)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /docs.json for the API"
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None),
                              scope=request.scope)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        if request.scope.get("tailor.too_big"):
            return _too_big(request)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error (a bug); the server log has "
                              "the details", scope=request.scope)


def _param(errors: list[dict]) -> str | None:
    """The request field the first error is about (OpenAI's ``param``)."""
    loc = [str(p) for p in (errors[0].get("loc", ()) if errors else ()) if p != "body"]
    return _loc(loc[0]) if loc else None


def _unparsable(cause: BaseException) -> str:
    """Why a body that FastAPI could not parse was refused. json.loads raises more than
    JSONDecodeError: UnicodeDecodeError (not UTF-8), RecursionError (nested too deeply) and
    ValueError (an integer of more than 4300 digits)."""
    if isinstance(cause, UnicodeDecodeError):
        why = f"is not UTF-8 ({cause.reason} at byte {cause.start})"
    elif isinstance(cause, RecursionError):
        why = "is nested too deeply (arrays or objects inside each other)"
    else:
        why = f"is not valid JSON ({str(cause)[:200]})"
    return (f"the request body {why}; send a JSON object encoded as UTF-8 with "
            "Content-Type: application/json")


def _too_big(request: Request) -> JSONResponse:
    limit = request.scope.get("tailor.max_body_bytes", "the limit")
    return error_response(413, "too_large", f"request body over {limit} bytes "
                          "(TAILOR_MAX_BODY_BYTES); send fewer or shorter texts per request",
                          scope=request.scope)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, whether or not the client
    sent Content-Length, before anything parses them."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope["tailor.max_body_bytes"] = self.max_bytes
        too_big = error_response(413, "too_large", f"request body over {self.max_bytes} bytes "
                                 "(TAILOR_MAX_BODY_BYTES); send fewer or shorter texts per request",
                                 scope=scope)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                return await too_big(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    scope["tailor.too_big"] = True  # seen by the handlers if FastAPI re-wraps this
                    raise _TooBig()
            return msg

        started = False

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooBig:
            if not started:
                await too_big(scope, receive, send)


class _TooBig(Exception):
    pass
