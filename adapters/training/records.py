"""A job's record and the transitions of its state, shared by every queue backend (the file
lease queue, ``lease_queue.py``, and PostgreSQL, ``pg_queue.py``).

The transitions are pure: each changes a ``QueuedJob`` in place; the backend decides how
the change reaches storage (a file replaced under a lock, a row updated in a transaction
that holds the row). So a retry, an expired lease or a fenced-off trainer mean the same on
both backends, and the rules are written once.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import Conflict, InvalidRequest, JobNotFound
from ..validation import shorten
from ..states import ACTIVE, JobState

# Job ids are uuid4 hex (32 characters). Anything else is not looked up at all, not even as a
# file name (a 300-character id failed with ENAMETOOLONG, a 500, not a 404).
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")


class LeaseLost(Exception):
    """This trainer's lease on the job expired (another attempt may hold it now), or the job
    was finished by somebody else: stop working on it, publish nothing."""


class Cancelled(Exception):
    """A job's work stops because a cancel was requested (raised by the work, or by
    ``begin_publish`` when the cancel came first)."""


@dataclass
class Attempt:
    owner: str
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # succeeded / failed / cancelled / lease_expired / retried


@dataclass
class QueuedJob:
    """A job's whole record, as stored. ``public()`` is what GET /v1/jobs/{id} answers."""

    id: str
    kind: str
    tenant: str
    adapter: str
    payload: dict[str, Any]
    max_attempts: int
    status: JobState = JobState.QUEUED
    created_at: float = 0.0
    finished_at: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    publishing: bool = False
    cancel_requested: bool = False
    progress: dict[str, int] = field(default_factory=lambda: {"step": 0, "total": 0})
    loss: float | None = None
    error: dict[str, str] | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QueuedJob":
        d = dict(d)
        d["attempts"] = [Attempt(**a) for a in d.get("attempts") or []]
        d["status"] = JobState(d["status"])
        d.setdefault("payload", {})
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "QueuedJob":
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The record without its payload (kept apart: the record is read on every claim)."""
        d = asdict(self)
        del d["payload"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def started_at(self) -> float | None:
        return self.attempts[-1].started_at if self.attempts else None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "adapter": self.adapter,
                "status": self.status.value, "progress": dict(self.progress), "loss": self.loss,
                "error": self.error, "result": self.result, "attempts": len(self.attempts),
                "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at)}


@dataclass(frozen=True)
class Lease:
    job: QueuedJob
    token: str
    owner: str
    expires_at: float


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


# -- transitions (pure: the caller stores the changed record) ------------------------------------
def close(job: QueuedJob, status: JobState, now: float, *, outcome: str | None = None,
          error: dict[str, str] | None = None, result: dict[str, Any] | None = None) -> QueuedJob:
    if job.attempts and job.attempts[-1].ended_at is None:
        job.attempts[-1].ended_at = now
        job.attempts[-1].outcome = outcome or status.value
    job.status, job.error, job.result, job.finished_at = status, error, result, now
    job.lease_owner = job.lease_token = job.lease_expires_at = None
    job.publishing = False
    return job


def start(job: QueuedJob, owner: str, token: str, now: float, lease_s: float) -> QueuedJob:
    """A claim: the job runs under a fresh lease, as a new attempt."""
    job.status, job.lease_owner, job.lease_token = JobState.RUNNING, owner, token
    job.lease_expires_at = now + lease_s
    job.attempts.append(Attempt(owner=owner, started_at=now))
    return job


def requeue(job: QueuedJob, now: float, outcome: str, code: str, why: str) -> QueuedJob:
    """Queue the job again as a new attempt, or fail it with ``why`` when none are left."""
    if len(job.attempts) >= job.max_attempts:
        return close(job, JobState.FAILED, now, outcome=outcome, error={
            "code": code, "message": why + ". No attempts left (TAILOR_JOB_ATTEMPTS): "
            "submit it again"})
    if job.attempts:
        job.attempts[-1].ended_at, job.attempts[-1].outcome = now, outcome
    job.status = JobState.QUEUED
    job.lease_owner = job.lease_token = job.lease_expires_at = None
    return job


def expire(job: QueuedJob, now: float) -> QueuedJob:
    """A running job whose trainer stopped renewing: retry it, or fail it with why."""
    lost = job.attempts[-1] if job.attempts else Attempt(owner="?", started_at=now)
    why = (f"its trainer {lost.owner} stopped renewing the lease (killed or stuck) "
           f"during attempt {len(job.attempts)} of {job.max_attempts}")
    if job.cancel_requested:
        return close(job, JobState.CANCELLED, now, outcome="lease_expired")
    if job.publishing:  # the result may be half published: never run it twice
        return close(job, JobState.FAILED, now, outcome="lease_expired", error={
            "code": "interrupted", "message": why + ", while publishing; check the "
            "adapter's latest version and submit again if it is missing"})
    return requeue(job, now, "lease_expired", "interrupted", why + "; nothing was published")


def release(job: QueuedJob, now: float) -> QueuedJob:
    """Give the job back without spending an attempt; cancelled instead if one was asked."""
    if job.cancel_requested:
        return close(job, JobState.CANCELLED, now)
    job.attempts.pop()
    job.status = JobState.QUEUED
    job.lease_owner = job.lease_token = job.lease_expires_at = None
    job.progress, job.loss = {"step": 0, "total": 0}, None
    return job


def check_held(job: QueuedJob | None, lease: Lease, now: float) -> QueuedJob:
    """The job, if ``lease`` still holds it (the fencing check before any change a trainer
    makes); else LeaseLost."""
    if (job is None or job.status != JobState.RUNNING or job.lease_token != lease.token
            or job.lease_expires_at is None or job.lease_expires_at <= now):
        raise LeaseLost(f"the lease of {lease.owner} on job {lease.job.id} is lost")
    return job


def cancel_check(job: QueuedJob) -> None:
    """Conflict unless the job can still be cancelled."""
    if job.status not in ACTIVE:
        raise Conflict(f"job {job.id} is {job.status}; only queued or running jobs can "
                       "be cancelled")
    if job.publishing:
        raise Conflict(f"job {job.id} has finished training and is publishing its "
                       "adapter; delete the new version instead (DELETE "
                       "/v1/adapters/{name}?version=N)")


def not_found(job_id: Any) -> Exception:
    return JobNotFound(f"job {shorten(job_id)} does not exist; the answer to POST "
                       "/v1/adapters names its job")


def bad_cursor(after: Any) -> Exception:
    return InvalidRequest(f"cursor {shorten(after)} is not a job of this listing; pass "
                          "the `next` value of the previous page (with the same filters)")
