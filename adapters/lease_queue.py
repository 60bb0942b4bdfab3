"""A job queue in the shared store, run by any number of trainer processes with leases.
(Prototype for issue 13's trainer pool: self-contained, imports only adapters.errors.)

Serving replicas ``submit`` jobs as data (kind, tenant, name, payload); trainers ``claim``
the oldest queued job and hold it with a lease they renew while they run it. A trainer that
dies (kill -9, OOM, node lost) stops renewing: once its lease expires, the next ``claim``
by any trainer takes the job again (a new attempt) or, after ``max_attempts``, fails it with
the reason. A trainer whose lease expired cannot renew, publish or finish any more (its
token is stale), so a job's result is published by one attempt only.

Layout under ``root`` (e.g. ``<store>/queue``, on the ReadWriteMany volume)::

    .lock              flock held for every state change: one small JSON read and replaced
    pending/<id>.json  queued and running jobs (what claim scans)
    done/<id>.json     succeeded, failed and cancelled jobs

Records are written atomically (temp file, fsync, rename). Lease times are wall-clock
seconds (``time.time``), compared across nodes: keep the lease (default 30 s) far above the
nodes' clock skew (NTP keeps it to milliseconds). The lock needs flock across nodes, as the
adapter store already does (NFSv4, CephFS, EFS...).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import Conflict, JobNotFound, Overloaded, TailorError

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")


class LeaseLost(Exception):
    """This trainer's lease on the job expired (and another attempt may hold it now), or the
    job was finished by somebody else: stop working on it, publish nothing."""


@dataclass
class Attempt:
    owner: str
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # succeeded / failed / cancelled / lease_expired / released


@dataclass
class QueuedJob:
    id: str
    kind: str
    tenant: str
    name: str
    payload: dict[str, Any]
    max_attempts: int
    status: str = QUEUED
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    publishing: bool = False
    cancel_requested: bool = False
    progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, text: str) -> "QueuedJob":
        d = json.loads(text)
        d["attempts"] = [Attempt(**a) for a in d.get("attempts", [])]
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Lease:
    job: QueuedJob
    token: str
    owner: str
    expires_at: float


class LeaseQueue:
    def __init__(self, root: str | Path, *, lease_s: float = 30.0, max_attempts: int = 2,
                 max_queued: int | None = None, clock: Callable[[], float] = time.time):
        if lease_s <= 0 or max_attempts < 1 or (max_queued is not None and max_queued < 1):
            raise ValueError(f"need lease_s > 0, max_attempts >= 1, max_queued >= 1; got "
                             f"{lease_s}, {max_attempts}, {max_queued}")
        self.root = Path(root)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.max_queued = max_queued
        self.clock = clock
        for d in ("pending", "done"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()  # flock emulated by POSIX locks (NFS) is per process

    # -- storage ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _path(self, where: str, job_id: str) -> Path:
        return self.root / where / f"{job_id}.json"

    def _write(self, where: str, job: QueuedJob) -> None:
        path = self._path(where, job.id)
        tmp = path.with_name(f".{job.id}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            f.write(job.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read(self, where: str, job_id: str) -> QueuedJob | None:
        try:
            return QueuedJob.from_json(self._path(where, job_id).read_text())
        except FileNotFoundError:
            return None

    def _pending(self) -> list[QueuedJob]:
        jobs = []
        for p in (self.root / "pending").glob("*.json"):
            if self._path("done", p.stem).exists():  # a finish cut short between its two steps
                p.unlink(missing_ok=True)
                continue
            try:
                jobs.append(QueuedJob.from_json(p.read_text()))
            except FileNotFoundError:
                continue
        return sorted(jobs, key=lambda j: (j.created_at, j.id))

    def _close(self, job: QueuedJob, status: str, *, outcome: str | None = None,
               error: dict[str, str] | None = None, result: dict[str, Any] | None = None) -> QueuedJob:
        now = self.clock()
        if job.attempts and job.attempts[-1].ended_at is None:
            job.attempts[-1].ended_at = now
            job.attempts[-1].outcome = outcome or status
        job.status, job.error, job.result, job.finished_at = status, error, result, now
        job.lease_owner = job.lease_token = job.lease_expires_at = None
        job.publishing = False
        self._write("done", job)
        self._path("pending", job.id).unlink(missing_ok=True)
        return job

    # -- serving side ----------------------------------------------------------------------------
    def submit(self, kind: str, tenant: str, name: str, payload: dict[str, Any]) -> QueuedJob:
        job = QueuedJob(id=uuid.uuid4().hex, kind=kind, tenant=tenant, name=name,
                        payload=payload, max_attempts=self.max_attempts, created_at=self.clock())
        with self._locked():
            if self.max_queued is not None:
                queued = sum(1 for j in self._pending() if j.status == QUEUED)
                if queued >= self.max_queued:
                    raise Overloaded(f"{queued} training jobs are already waiting (limit "
                                     f"{self.max_queued}); retry later")
            self._write("pending", job)
        return job

    def get(self, tenant: str, job_id: str) -> QueuedJob:
        """The job's record; another tenant's job is 404, as a missing one."""
        job = None
        if isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id):
            # done, then pending, then done again: a finish writes done/ before it removes
            # pending/, so a job finishing meanwhile is found by the third read
            job = self._read("done", job_id) or self._read("pending", job_id) or self._read("done", job_id)
        if job is None or job.tenant != tenant:
            raise JobNotFound(f"job {job_id[:40]} does not exist")
        return job

    def cancel(self, tenant: str, job_id: str) -> QueuedJob:
        """A queued job is cancelled at once; a running one when its trainer next renews (or
        when its lease expires, if the trainer is gone)."""
        with self._locked():
            job = self.get(tenant, job_id)
            if job.status not in ACTIVE:
                raise Conflict(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
            if job.status == QUEUED:
                return self._close(job, CANCELLED)
            job.cancel_requested = True
            self._write("pending", job)
            return job

    def counts(self) -> dict[str, int]:
        """Queued and running jobs now (the ``tailor_jobs`` gauge). Reads without the lock:
        each record is replaced atomically."""
        out = {QUEUED: 0, RUNNING: 0}
        for job in self._pending():
            out[job.status] = out.get(job.status, 0) + 1
        return out

    # -- trainer side ----------------------------------------------------------------------------
    def claim(self, owner: str, kinds: Iterable[str] | None = None) -> Lease | None:
        """Take the oldest queued job (of ``kinds``) with a fresh lease, after settling expired
        leases; None when there is nothing to run."""
        wanted = set(kinds) if kinds is not None else None
        with self._locked():
            now = self.clock()
            for job in self._pending():
                if job.status == RUNNING and job.lease_expires_at is not None and job.lease_expires_at <= now:
                    job = self._expired(job, now)
                if job.status != QUEUED or (wanted is not None and job.kind not in wanted):
                    continue
                token = uuid.uuid4().hex
                job.status, job.lease_owner, job.lease_token = RUNNING, owner, token
                job.lease_expires_at = now + self.lease_s
                job.attempts.append(Attempt(owner=owner, started_at=now))
                self._write("pending", job)
                return Lease(job, token, owner, job.lease_expires_at)
        return None

    def _expired(self, job: QueuedJob, now: float) -> QueuedJob:
        """A running job whose trainer stopped renewing: retry it, or fail it with why."""
        lost = job.attempts[-1] if job.attempts else Attempt(owner="?", started_at=now)
        why = (f"its trainer {lost.owner} stopped renewing the lease (killed or stuck) "
               f"during attempt {len(job.attempts)} of {job.max_attempts}")
        if job.cancel_requested:
            return self._close(job, CANCELLED, outcome="lease_expired")
        if job.publishing:  # the result may be half published: never run it twice
            return self._close(job, FAILED, outcome="lease_expired", error={
                "code": "interrupted", "message": why + ", while publishing; check the "
                "adapter's latest version and submit again if it is missing"})
        if len(job.attempts) >= job.max_attempts:
            return self._close(job, FAILED, outcome="lease_expired", error={
                "code": "interrupted", "message": why + "; no attempts left. Submit it again"})
        lost.ended_at, lost.outcome = now, "lease_expired"
        job.status = QUEUED
        job.lease_owner = job.lease_token = job.lease_expires_at = None
        self._write("pending", job)
        return job

    def _held(self, lease: Lease) -> QueuedJob:
        """The job, if ``lease`` still holds it (call under the lock); else LeaseLost."""
        job = self._read("pending", lease.job.id)
        if (job is None or job.status != RUNNING or job.lease_token != lease.token
                or job.lease_expires_at is None or job.lease_expires_at <= self.clock()):
            raise LeaseLost(f"the lease of {lease.owner} on job {lease.job.id} is lost")
        return job

    def renew(self, lease: Lease, progress: dict[str, Any] | None = None) -> Lease:
        """Extend the lease by ``lease_s`` (call every ``lease_s / 3``). Raises LeaseLost. The
        returned lease's ``job.cancel_requested`` says whether to stop."""
        with self._locked():
            job = self._held(lease)
            job.lease_expires_at = self.clock() + self.lease_s
            if progress is not None:
                job.progress = progress
            self._write("pending", job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def begin_publish(self, lease: Lease) -> Lease:
        """Mark the job as publishing while the lease holds: from here an expired lease fails
        the job instead of retrying it (a second attempt could publish a second version)."""
        with self._locked():
            job = self._held(lease)
            job.publishing = True
            job.lease_expires_at = self.clock() + self.lease_s
            self._write("pending", job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def finish(self, lease: Lease, result: dict[str, Any] | None = None) -> QueuedJob:
        with self._locked():
            return self._close(self._held(lease), SUCCEEDED, result=result)

    def fail(self, lease: Lease, code: str, message: str) -> QueuedJob:
        """The attempt failed for a reason retrying will not fix (bad data, a bug): fail now."""
        with self._locked():
            return self._close(self._held(lease), FAILED, error={"code": code, "message": message})

    def cancelled(self, lease: Lease) -> QueuedJob:
        """The trainer stopped because cancel was requested."""
        with self._locked():
            return self._close(self._held(lease), CANCELLED)

    def release(self, lease: Lease) -> QueuedJob:
        """Give the job back without spending an attempt (a trainer shutting down cleanly)."""
        with self._locked():
            job = self._held(lease)
            job.attempts.pop()
            job.status = QUEUED
            job.lease_owner = job.lease_token = job.lease_expires_at = None
            self._write("pending", job)
            return job


class Heartbeat:
    """Renews a lease every ``lease_s / 3`` on a thread while the work runs. The work checks
    ``lost`` (stop, publish nothing) and ``cancel`` (stop, report cancelled)."""

    def __init__(self, queue: LeaseQueue, lease: Lease, every_s: float | None = None):
        self.queue = queue
        self.lease = lease
        self.every_s = every_s or queue.lease_s / 3
        self.lost = threading.Event()
        self.cancel = threading.Event()
        self.progress: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tailor-lease", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.lease = self.queue.renew(self.lease, self.progress)
            except LeaseLost:
                self.lost.set()
                return
            except OSError:  # the store hiccupped: try again next beat, the lease has slack
                continue
            if self.lease.job.cancel_requested:
                self.cancel.set()


class Cancelled(Exception):
    """Raised by a job's work when it saw ``heartbeat.cancel``."""


def run_one(queue: LeaseQueue, owner: str,
            work: Callable[[QueuedJob, Heartbeat], Callable[[], dict[str, Any]]],
            kinds: Iterable[str] | None = None) -> QueuedJob | None:
    """Claim one job and run it under a heartbeat. ``work(job, heartbeat)`` trains (checking
    ``heartbeat.lost`` / ``heartbeat.cancel``) and returns ``publish``, a function that makes
    the result visible and returns the job's result; it runs only while the lease still
    holds, after ``begin_publish``. Returns the finished record, or None when there was
    nothing to run or the lease was lost (another attempt owns the job now)."""
    lease = queue.claim(owner, kinds)
    if lease is None:
        return None
    try:
        with Heartbeat(queue, lease) as hb:
            try:
                publish = work(lease.job, hb)
                if hb.cancel.is_set():
                    raise Cancelled()
            except Cancelled:
                return queue.cancelled(hb.lease)
            except TailorError as e:
                return queue.fail(hb.lease, e.code, e.message)
            except LeaseLost:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in training: fail the job, keep the trainer
                return queue.fail(hb.lease, "internal_error", f"training failed: {e!r}")
            hb.lease = queue.begin_publish(hb.lease)  # the heartbeat renews on while it publishes
            result = publish()
        return queue.finish(hb.lease, result)
    except LeaseLost:
        return None


def owner_id() -> str:
    """host:pid:random of this trainer process (unique across restarts and nodes)."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
