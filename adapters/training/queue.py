"""The job queue's interface, and the one place that picks its backend.

``JobQueue`` is what ``JobManager`` (and through it the service) uses; two backends have it:
``LeaseQueue`` (files in the shared store: the embedded default, one node or an RWX volume)
and ``PgQueue`` (PostgreSQL: any number of nodes, no shared disk). Both keep one record per
job with the same transitions (``records.py``): leases renewed with progress, a fencing
token checked by every change a trainer makes, attempts, cancel, begin_publish.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from .records import Lease, QueuedJob


class JobQueue(Protocol):
    lease_s: float

    @property
    def where(self) -> str:
        """Where the jobs are, for log lines (a folder, or a database without its password)."""

    # -- any process
    def submit(self, kind: str, tenant: str, adapter: str, payload: dict[str, Any]) -> QueuedJob: ...
    def get(self, tenant: str, job_id: str) -> QueuedJob: ...
    def cancel(self, tenant: str, job_id: str) -> QueuedJob: ...
    def active(self, tenant: str | None = None) -> list[QueuedJob]: ...
    def of_tenant(self, tenant: str) -> list[QueuedJob]: ...
    def page(self, tenant: str, *, status: str | None = None, adapter: str | None = None,
             limit: int = 20, after: str | None = None) -> tuple[list[QueuedJob], str | None]: ...
    def counts(self) -> dict[str, int]: ...
    def usage(self) -> dict[str, dict[str, int]]: ...

    # -- trainers: every call but claim raises LeaseLost once the lease is not theirs
    def claim(self, owner: str, kinds: Iterable[str] | None = None) -> Lease | None: ...
    def renew(self, lease: Lease, progress: dict[str, int] | None = None,
              loss: float | None = None) -> Lease: ...
    def begin_publish(self, lease: Lease) -> Lease: ...
    def finish(self, lease: Lease, result: dict[str, Any] | None = None) -> QueuedJob: ...
    def fail(self, lease: Lease, code: str, message: str) -> QueuedJob: ...
    def retry(self, lease: Lease, code: str, message: str) -> QueuedJob: ...
    def cancelled(self, lease: Lease) -> QueuedJob: ...
    def release(self, lease: Lease) -> QueuedJob: ...

    def wakeups(self, stop: threading.Event) -> Iterator[None]:
        """Yields when a job may have been queued by another process, until ``stop`` is set
        (nothing, where the backend cannot tell: the trainers poll)."""

    def close(self) -> None: ...


def open_queue(url: str | None, root: str | Path, **options: Any) -> JobQueue:
    """The queue ``url`` names (``postgresql://...``), or the file queue in ``root`` when
    there is none. ``options``: lease_s, max_attempts, max_queued, retry_after_s."""
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"a job queue URL starts with postgresql:// (got {url.split(':')[0]}:...)")
        from .pg_queue import PgQueue

        return PgQueue(url, **options)
    from .lease_queue import LeaseQueue

    return LeaseQueue(root, **options)
