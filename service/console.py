"""The console (``/ui``): static files served by the service itself, same process and port.

The console is plain ES modules, HTML and CSS from ``service/console/`` (no build step, no
framework). It calls only the public v1 API, with the user's API key sent by the browser in
``Authorization``, so it has exactly the caller's rights: the static files need no key (they
hold no data), every API call does. It is a plain ASGI app (Starlette's StaticFiles), not a
FastAPI one, so BentoML leaves it out of the OpenAPI document (/docs.json); its request
series are labelled ``/ui/{file}`` (service/route_labels.py).

Every answer carries a Content-Security-Policy that allows scripts, styles and connections
from this origin only (no inline script or style, no third-party origin, no framing): texts
and labels are data that the console writes with ``textContent``, and the policy is the
second line of defence if a future change ever forgot that.
"""
from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

PATH = "/ui"
FILES = Path(__file__).resolve().parent / "console"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"),
           # small files that change with each release: revalidate (ETag) rather than go stale
           (b"cache-control", b"no-cache")]


class SecurityHeaders:
    """ASGI middleware: the headers above on every console answer (files and 404s)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in HEADERS if h[0] not in names)]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except HTTPException as e:  # StaticFiles' 404/405: answered here, with the headers
            await PlainTextResponse(e.detail, e.status_code, e.headers)(scope, receive, with_headers)


def create_console() -> SecurityHeaders:
    """The app to mount at ``/ui`` (``/ui`` itself is redirected to ``/ui/`` by the outer
    router, so the page's relative links resolve under the folder)."""
    return SecurityHeaders(StaticFiles(directory=FILES, html=True))
