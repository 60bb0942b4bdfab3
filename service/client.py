"""A typed Python client for Tailor's v1 API, sync (``Client``) and async (``AsyncClient``).

    from service.client import Client
    with Client("http://localhost:3000", api_key="...") as tailor:
        pending = tailor.create_adapter("topics", examples, kind="lora")
        job = tailor.wait(pending.job, on_progress=lambda j: print(j.progress))
        print(tailor.predict("topics", ["where is my refund?"]).predictions[0].label)

Light on purpose: httpx and pydantic only (no torch, no BentoML), so an application can
import it without the server's dependencies. Records are pydantic models of the public
contract (they mirror service/schemas.py's answers; tests/unit/service/test_client.py keeps them
in step) and keep fields a newer server adds. An answer of 429 or 503 is retried after its
``Retry-After`` (at most ``retries`` times, each wait capped at ``max_retry_wait`` seconds);
any other error raises ``TailorAPIError`` with the server's ``code`` and ``message``.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AsyncClient", "Client", "TailorAPIError", "TailorConnectionError"]

DEFAULT_URL = "http://localhost:3000"
RETRIED = (429, 503)
# Idle pooled connections are dropped after this many seconds, well before the server drops
# them (`bentoml serve` runs uvicorn, keep-alive 5 s; httpx's own default is also 5 s). With
# equal timers a request sent on a connection the server is closing fails with ReadError: the
# load test saw it from a client back from a Retry-After wait, on a busy 2-core machine.
LIMITS = httpx.Limits(keepalive_expiry=2.0)
# the job states after which a job does not change: adapters.states.FINISHED, spelled
# here so that the client imports nothing of the server (tests/unit/service/test_client.py)
FINAL = ("succeeded", "failed", "cancelled")


class TailorAPIError(Exception):
    """The server answered an error: ``status``, its stable ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class TailorConnectionError(TailorAPIError):
    """The server could not be reached (status 0, code ``connection_error``)."""

    def __init__(self, url: str, why: str):
        super().__init__(0, "connection_error", f"cannot reach the server at {url}: {why}")


# -- records (the answers' shapes; unknown fields are kept) ------------------------------------
class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobProgress(_Record):
    step: int
    total: int


class JobError(_Record):
    code: str
    message: str


class JobRecord(_Record):
    id: str
    kind: str
    adapter: str
    status: str = Field(..., description="queued, running, succeeded, failed or cancelled")
    progress: JobProgress
    loss: float | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None
    attempts: int = 0
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


class JobList(_Record):
    jobs: list[JobRecord]
    next: str | None = None


class AdapterRecord(_Record):
    name: str
    version: int
    ref: str
    kind: str
    status: str
    labels: list[str]
    multi_label: bool
    options: dict[str, Any]
    metrics: dict[str, Any]
    warnings: list[str]
    backbone: dict[str, str]
    size_bytes: int
    created_at: str
    label_descriptions: dict[str, str] | None = None
    changes: dict[str, Any] | None = None
    job: JobRecord | None = None
    versions: list[int] | None = None


class PendingAdapter(_Record):
    """An adapter that trains as a job (202): ``job`` says how far it is."""

    name: str
    kind: str
    status: Literal["training"]
    labels: list[str]
    options: dict[str, Any]
    job: JobRecord


class TrainingAdapter(_Record):
    name: str
    kind: str
    status: str
    job: JobRecord


class AdapterList(_Record):
    adapters: list[AdapterRecord]
    training: list[TrainingAdapter] = []


class DeleteResponse(_Record):
    name: str
    deleted_versions: list[int]


class Prediction(_Record):
    label: str
    score: float
    scores: dict[str, float]
    labels: list[str] | None = None


class PredictResponse(_Record):
    adapter: str
    predictions: list[Prediction]


class Suggestion(_Record):
    index: int
    text: str
    label: str
    score: float


class SuggestResponse(_Record):
    adapter: str
    suggestions: list[Suggestion]


class EmbedResponse(_Record):
    embeddings: list[list[float]]
    dim: int


Created = AdapterRecord | PendingAdapter
Progress = Callable[[JobRecord], None]


def _created(body: dict[str, Any]) -> Created:
    return PendingAdapter.model_validate(body) if body.get("status") == "training" \
        else AdapterRecord.model_validate(body)


def _drop_none(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _error(r: httpx.Response) -> TailorAPIError:
    try:
        err = r.json()["error"]
        return TailorAPIError(r.status_code, str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        return TailorAPIError(r.status_code, "http_error", r.text[:500])


class _Base:
    """What both clients share: the requests each method sends and how answers are read.
    A method returns ``(method, path, kwargs, parse)``; the sync and async transports run it."""

    def __init__(self, url: str, api_key: str | None, retries: int, max_retry_wait: float):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = retries
        self.max_retry_wait = max_retry_wait

    def _wait_s(self, r: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``r``, or None when it is not retried."""
        if r.status_code not in RETRIED or attempt >= self.retries:
            return None
        try:
            wait = float(r.headers.get("retry-after", ""))
        except ValueError:
            wait = min(2.0 ** attempt, self.max_retry_wait)  # no (or an HTTP-date) Retry-After
        return max(0.0, min(wait, self.max_retry_wait))

    @staticmethod
    def _read(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            raise _error(r)
        return r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else r.content

    # -- the API, as requests ---------------------------------------------------------------
    @staticmethod
    def _create(name: str, examples: list[dict[str, Any]] | None, kind: str,
                options: dict[str, Any] | None, label_descriptions: dict[str, str] | None,
                unlabeled: list[str] | None) -> tuple:
        body = {"name": name, "kind": kind, "examples": examples or [], "options": options or {},
                **_drop_none(label_descriptions=label_descriptions, unlabeled=unlabeled)}
        return "POST", "/v1/adapters", {"json": body}, _created

    @staticmethod
    def _add(name: str, examples: list[dict[str, Any]] | None, **kw: Any) -> tuple:
        body = {"examples": examples or [], **_drop_none(**kw)}
        return "POST", f"/v1/adapters/{name}/examples", {"json": body}, _created

    @staticmethod
    def _jobs(status: str | None, adapter: str | None, limit: int, after: str | None) -> tuple:
        params = _drop_none(status=status, adapter=adapter, limit=limit, after=after)
        return "GET", "/v1/jobs", {"params": params}, JobList.model_validate


def _job_id(job: JobRecord | str) -> str:
    return job if isinstance(job, str) else job.id


class Client(_Base):
    """Synchronous client. ``retries``: how many times a 429/503 is retried."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = 300.0, retries: int = 3, max_retry_wait: float = 30.0,
                 http: httpx.Client | None = None):
        """``http``: an httpx client to send through instead (custom TLS, proxies, tests);
        its base URL and headers are used as they are."""
        super().__init__(url, api_key, retries, max_retry_wait)
        self._owned = http is None  # close only what this client opened
        self.http = http or httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout,
                                         limits=LIMITS)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One call, retried on 429/503 after Retry-After; the parsed JSON (or bytes)."""
        attempt = 0
        while True:
            try:
                r = self.http.request(method, path, **kw)
            except httpx.HTTPError as e:
                raise TailorConnectionError(self.url, str(e) or type(e).__name__) from None
            wait = self._wait_s(r, attempt)
            if wait is None:
                return self._read(r)
            time.sleep(wait)
            attempt += 1

    def _run(self, spec: tuple) -> Any:
        method, path, kw, parse = spec
        return parse(self.request(method, path, **kw))

    def create_adapter(self, name: str, examples: list[dict[str, Any]] | None = None,
                       kind: str = "head", options: dict[str, Any] | None = None, *,
                       label_descriptions: dict[str, str] | None = None,
                       unlabeled: list[str] | None = None) -> Created:
        return self._run(self._create(name, examples, kind, options, label_descriptions, unlabeled))

    def add_examples(self, name: str, examples: list[dict[str, Any]] | None = None,
                     **kw: Any) -> Created:
        """``kw``: label_descriptions, unlabeled, kind, options (as the HTTP body)."""
        return self._run(self._add(name, examples, **kw))

    def list_adapters(self) -> AdapterList:
        return AdapterList.model_validate(self.request("GET", "/v1/adapters"))

    def get_adapter(self, ref: str) -> AdapterRecord:
        return AdapterRecord.model_validate(self.request("GET", f"/v1/adapters/{ref}"))

    def delete_adapter(self, name: str, version: int | None = None) -> DeleteResponse:
        return DeleteResponse.model_validate(self.request(
            "DELETE", f"/v1/adapters/{name}", params=_drop_none(version=version)))

    def suggest(self, ref: str, texts: list[str], k: int = 20) -> SuggestResponse:
        return SuggestResponse.model_validate(self.request(
            "POST", f"/v1/adapters/{ref}/suggest", json={"texts": texts, "k": k}))

    def predict(self, ref: str, inputs: list[Any]) -> PredictResponse:
        return PredictResponse.model_validate(self.request(
            "POST", "/v1/predict", json={"adapter": ref, "inputs": inputs}))

    def embed(self, inputs: list[Any]) -> EmbedResponse:
        return EmbedResponse.model_validate(self.request("POST", "/v1/embed", json={"inputs": inputs}))

    def export(self, ref: str, dest: str | Path, quantize: str = "none") -> Path:
        """The adapter's ONNX bundle (zip), written to ``dest`` (a folder or a file name)."""
        data = self.request("POST", f"/v1/adapters/{ref}/export", json={"quantize": quantize})
        path = Path(dest)
        if path.is_dir():
            path = path / f"{ref.replace('@', '-v')}.zip"
        path.write_bytes(data)
        return path

    def list_jobs(self, status: str | None = None, adapter: str | None = None, limit: int = 20,
                  after: str | None = None) -> JobList:
        return self._run(self._jobs(status, adapter, limit, after))

    def get_job(self, job: JobRecord | str) -> JobRecord:
        return JobRecord.model_validate(self.request("GET", f"/v1/jobs/{_job_id(job)}"))

    def cancel_job(self, job: JobRecord | str) -> JobRecord:
        return JobRecord.model_validate(self.request("DELETE", f"/v1/jobs/{_job_id(job)}"))

    def wait(self, job: JobRecord | str, on_progress: Progress | None = None,
             interval: float = 0.5, timeout: float = 3600.0) -> JobRecord:
        """Poll until the job is finished (succeeded, failed or cancelled) and return it;
        ``on_progress(job)`` hears every poll. TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.get_job(job)
            if on_progress is not None:
                on_progress(rec)
            if rec.done:
                return rec
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {rec.id} is still {rec.status} after {timeout} s")
            time.sleep(interval)


class AsyncClient(_Base):
    """The same API as ``Client``, as coroutines (httpx.AsyncClient)."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = 300.0, retries: int = 3, max_retry_wait: float = 30.0,
                 http: httpx.AsyncClient | None = None):
        super().__init__(url, api_key, retries, max_retry_wait)
        self._owned = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, headers=self.headers,
                                              timeout=timeout, limits=LIMITS)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        attempt = 0
        while True:
            try:
                r = await self.http.request(method, path, **kw)
            except httpx.HTTPError as e:
                raise TailorConnectionError(self.url, str(e) or type(e).__name__) from None
            wait = self._wait_s(r, attempt)
            if wait is None:
                return self._read(r)
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, spec: tuple) -> Any:
        method, path, kw, parse = spec
        return parse(await self.request(method, path, **kw))

    async def create_adapter(self, name: str, examples: list[dict[str, Any]] | None = None,
                             kind: str = "head", options: dict[str, Any] | None = None, *,
                             label_descriptions: dict[str, str] | None = None,
                             unlabeled: list[str] | None = None) -> Created:
        return await self._run(self._create(name, examples, kind, options, label_descriptions,
                                            unlabeled))

    async def add_examples(self, name: str, examples: list[dict[str, Any]] | None = None,
                           **kw: Any) -> Created:
        return await self._run(self._add(name, examples, **kw))

    async def list_adapters(self) -> AdapterList:
        return AdapterList.model_validate(await self.request("GET", "/v1/adapters"))

    async def get_adapter(self, ref: str) -> AdapterRecord:
        return AdapterRecord.model_validate(await self.request("GET", f"/v1/adapters/{ref}"))

    async def delete_adapter(self, name: str, version: int | None = None) -> DeleteResponse:
        return DeleteResponse.model_validate(await self.request(
            "DELETE", f"/v1/adapters/{name}", params=_drop_none(version=version)))

    async def suggest(self, ref: str, texts: list[str], k: int = 20) -> SuggestResponse:
        return SuggestResponse.model_validate(await self.request(
            "POST", f"/v1/adapters/{ref}/suggest", json={"texts": texts, "k": k}))

    async def predict(self, ref: str, inputs: list[Any]) -> PredictResponse:
        return PredictResponse.model_validate(await self.request(
            "POST", "/v1/predict", json={"adapter": ref, "inputs": inputs}))

    async def embed(self, inputs: list[Any]) -> EmbedResponse:
        return EmbedResponse.model_validate(await self.request("POST", "/v1/embed",
                                                               json={"inputs": inputs}))

    async def export(self, ref: str, dest: str | Path, quantize: str = "none") -> Path:
        data = await self.request("POST", f"/v1/adapters/{ref}/export", json={"quantize": quantize})
        path = Path(dest)
        if path.is_dir():
            path = path / f"{ref.replace('@', '-v')}.zip"
        path.write_bytes(data)
        return path

    async def list_jobs(self, status: str | None = None, adapter: str | None = None,
                        limit: int = 20, after: str | None = None) -> JobList:
        return await self._run(self._jobs(status, adapter, limit, after))

    async def get_job(self, job: JobRecord | str) -> JobRecord:
        return JobRecord.model_validate(await self.request("GET", f"/v1/jobs/{_job_id(job)}"))

    async def cancel_job(self, job: JobRecord | str) -> JobRecord:
        return JobRecord.model_validate(await self.request("DELETE", f"/v1/jobs/{_job_id(job)}"))

    async def wait(self, job: JobRecord | str, on_progress: Progress | None = None,
                   interval: float = 0.5, timeout: float = 3600.0) -> JobRecord:
        deadline = time.monotonic() + timeout
        while True:
            rec = await self.get_job(job)
            if on_progress is not None:
                on_progress(rec)
            if rec.done:
                return rec
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {rec.id} is still {rec.status} after {timeout} s")
            await asyncio.sleep(interval)
