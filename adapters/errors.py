"""Domain errors. Each carries the HTTP status it maps to and a stable snake_case code.

The service maps these in one place (``service/errors.py``); the domain never imports HTTP
code. Every message says what was wrong and what to do about it.
"""
from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


def shorten(value: object) -> str:
    """A short ``repr(value)`` for error messages: they echo what the client sent, and a
    client can send megabytes or deeply nested lists."""
    return _SHORT.repr(value)


class TailorError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequest(TailorError):
    """The request is well-formed JSON but its content cannot be used (422)."""

    status = 422
    code = "invalid_request"


class InvalidExamples(InvalidRequest):
    code = "invalid_examples"


class InvalidOptions(InvalidRequest):
    code = "invalid_options"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class TooManyAdapters(InvalidRequest):
    """A tenant is at its limit of adapter names. 422, not 429: retrying does not help until
    the tenant deletes an adapter (or the operator raises the limit)."""

    code = "too_many_adapters"


class AdapterNotFound(TailorError):
    status = 404
    code = "adapter_not_found"


class JobNotFound(TailorError):
    status = 404
    code = "job_not_found"


class Conflict(TailorError):
    status = 409
    code = "conflict"


class TooLarge(TailorError):
    status = 413
    code = "too_large"


class Overloaded(TailorError):
    status = 429
    code = "overloaded"


class NotReady(TailorError):
    status = 503
    code = "not_ready"


class Unavailable(TailorError):
    """A service Tailor depends on (the job database) cannot be reached now; the answer
    carries Retry-After (503)."""
    status = 503
    code = "unavailable"


class StoreUnavailable(Unavailable):
    """The adapter store (an S3-compatible server) cannot be reached or answered an error:
    503 with Retry-After, as a transient fault the client can retry, never a 500 or a hang."""

    code = "store_unavailable"


class IncompatibleAdapter(TailorError):
    """A stored adapter was trained on another backbone or an unknown schema (409)."""

    status = 409
    code = "incompatible_adapter"


class CorruptAdapter(TailorError):
    """A stored adapter's files do not match their manifest checksums (500-class data fault
    reported as 409 so the client knows the version is unusable, not the server broken)."""

    status = 409
    code = "corrupt_adapter"
