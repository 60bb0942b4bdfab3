"""What every v1 route asks of its request: the domain engine and the caller's tenant.
Shared by Tailor's own routes (service/api.py) and the OpenAI-compatible ones
(service/openai_api.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from adapters.errors import NotReady

if TYPE_CHECKING:  # the engine (and torch) load in the worker only: service/service.py
    from adapters import Tailor


def engine(request: Request) -> Tailor:
    t = getattr(request.app.state, "tailor", None)
    if t is None:
        raise NotReady("the backbone is still loading; retry when /readyz answers 200",
                       headers={"Retry-After": "5"})
    return t


def tenant_of(request: Request) -> str:
    """The tenant this request acts as: set by the ``Authenticate`` middleware from the API
    key (and, for admin keys, X-Tailor-Tenant); ``default`` when the service runs open."""
    return request.scope["tailor.tenant"]
