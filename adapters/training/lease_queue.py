"""The job queue in the shared store: any process submits, any number of trainer processes
run jobs, each holding its job with a lease it renews.

Serving processes ``submit`` jobs as data (kind, tenant, adapter name, JSON payload);
trainers ``claim`` the oldest queued job with a lease and renew it while they run it. A
trainer that dies (kill -9, OOM, node lost) stops renewing: once its lease has expired, the
next ``claim`` by any trainer queues the job again as a new attempt or, after
``max_attempts``, fails it with the reason. A trainer whose lease expired cannot renew,
publish or finish any more (its token is stale), so a job's result is published by one
attempt only. A holder on the same host that is known to be dead (its pid is gone) does
not wait out its lease: a trainer restarted in the same pod takes the job back at once.

Layout under ``root`` (``<store>/jobs``, on the ReadWriteMany volume)::

    .lock               flock held for every state change: one small JSON read and replaced
    pending/<id>.json   queued and running jobs (what claim scans)
    done/<id>.json      succeeded, failed and cancelled jobs
    payloads/<id>.json  what to train (examples, options: up to megabytes), written once,
                        read by the trainer that claims the job, removed when it finishes
    <id>.json           a record written by Tailor before the queue (read only)

Records are written atomically (temp file, fsync, rename). Lease times are wall-clock
seconds (``time.time``), compared across nodes: keep the lease (default 30 s) far above the
nodes' clock skew (NTP keeps it to milliseconds). The lock needs flock across nodes, as the
adapter store already does (NFSv4, CephFS, EFS...).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..backoff import retry_after
from ..errors import Overloaded
from . import records
from .owner import owner_gone
from .records import (JOB_ID_RE, Attempt, Cancelled, Lease, LeaseLost, QueuedJob,  # noqa: F401
                      bad_cursor, not_found)
from ..states import ACTIVE, JobState


class LeaseQueue:
    def __init__(self, root: str | Path, *, lease_s: float = 30.0, max_attempts: int = 2,
                 max_queued: int | None = None, retry_after_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        if lease_s <= 0 or max_attempts < 1 or (max_queued is not None and max_queued < 1):
            raise ValueError(f"need lease_s > 0, max_attempts >= 1, max_queued >= 1; got "
                             f"{lease_s}, {max_attempts}, {max_queued}")
        self.root = Path(root)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.clock = clock
        for d in ("pending", "done", "payloads"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()  # flock emulated by POSIX locks (NFS) is per process
        self._sweep_tmp()

    @property
    def where(self) -> str:
        return str(self.root)

    def close(self) -> None:
        """Nothing to release: every call opens and closes its files."""

    def wakeups(self, stop: threading.Event) -> Iterator[None]:
        """Files send no notice: trainers in other processes find new jobs by polling."""
        return iter(())

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

    def _write(self, where: str, job: QueuedJob, text: str | None = None) -> None:
        path = self._path(where, job.id)
        tmp = path.with_name(f".{job.id}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            f.write(job.to_json() if text is None else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read(self, where: str, job_id: str) -> QueuedJob | None:
        try:
            return QueuedJob.from_json(self._path(where, job_id).read_text())
        except FileNotFoundError:
            return None

    def _sweep_tmp(self) -> None:
        """Record writes cut short by a crash (not a replica's write in flight: > 60 s old),
        and payloads whose job record was never written (a submit cut short: > 1 h old)."""
        for d in ("pending", "done", "payloads"):
            for tmp in (self.root / d).glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - tmp.stat().st_mtime > 60:
                        tmp.unlink()
        for p in (self.root / "payloads").glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                if (not self._path("pending", p.stem).exists()
                        and time.time() - p.stat().st_mtime > 3600):
                    p.unlink()

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

    def _save(self, job: QueuedJob) -> QueuedJob:
        """Store a record after a transition: a finished job moves to done/ (and loses its
        payload), an active one is replaced in pending/."""
        if job.status in ACTIVE:
            self._write("pending", job)
            return job
        self._write("done", job)
        self._path("pending", job.id).unlink(missing_ok=True)
        self._path("payloads", job.id).unlink(missing_ok=True)
        return job

    def _close(self, job: QueuedJob, status: JobState, **kw: Any) -> QueuedJob:
        return self._save(records.close(job, status, self.clock(), **kw))

    # -- any process -----------------------------------------------------------------------------
    def submit(self, kind: str, tenant: str, adapter: str, payload: dict[str, Any]) -> QueuedJob:
        """Queue a job (its payload must be JSON). Overloaded (429 + Retry-After) when
        ``max_queued`` jobs are already waiting."""
        job = QueuedJob(id=uuid.uuid4().hex, kind=kind, tenant=tenant, adapter=adapter,
                        payload=payload, max_attempts=self.max_attempts, created_at=self.clock())
        text = json.dumps(payload)  # before the lock: megabytes of examples take a while
        with self._locked():
            if self.max_queued is not None:
                queued = sum(1 for j in self._pending() if j.status == JobState.QUEUED)
                if queued >= self.max_queued:
                    retry = retry_after(self.retry_after_s)
                    raise Overloaded(f"{queued} training jobs are already waiting (limit "
                                     f"{self.max_queued}, TAILOR_JOB_QUEUE_SIZE); retry in "
                                     f"{retry} s", headers={"Retry-After": str(retry)})
            self._write("payloads", job, text)  # the payload first: a queued job has one
            self._write("pending", job)
        return job

    def get(self, tenant: str, job_id: str) -> QueuedJob:
        """The job's record; another tenant's job is 404, as a missing one."""
        job = None
        if isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id):
            # done, then pending, then done again: a finish writes done/ before it removes
            # pending/, so a job finishing meanwhile is found by the third read
            job = (self._read("done", job_id) or self._read("pending", job_id)
                   or self._read("done", job_id) or self._legacy(job_id))
        if job is None or job.tenant != tenant:
            raise not_found(job_id)
        return job

    def _legacy(self, job_id: str) -> QueuedJob | None:
        """A record of the job runner before this queue (``<root>/<id>.json``). Read only: one
        that was queued or running then never finished."""
        try:
            d = json.loads((self.root / f"{job_id}.json").read_text())
            job = QueuedJob(id=d["id"], kind=d["kind"], tenant=d["tenant"], adapter=d["adapter"],
                            payload={}, max_attempts=1, status=JobState(d["status"]),
                            created_at=dt.datetime.fromisoformat(d["created_at"]).timestamp(),
                            progress=d.get("progress") or {"step": 0, "total": 0},
                            loss=d.get("loss"), error=d.get("error"), result=d.get("result"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if job.status in ACTIVE:
            job.status = JobState.FAILED
            job.error = {"code": "interrupted", "message": "interrupted by an upgrade of the "
                         "server before it finished; nothing was published. Submit it again"}
        return job

    def cancel(self, tenant: str, job_id: str) -> QueuedJob:
        """A queued job is cancelled at once; a running one when its trainer next renews (or
        when its lease expires, if the trainer is gone). Conflict (409) once it is finished
        or publishing."""
        with self._locked():
            job = self.get(tenant, job_id)
            records.cancel_check(job)
            if job.status == JobState.QUEUED:
                return self._close(job, JobState.CANCELLED)
            job.cancel_requested = True
            self._write("pending", job)
            return job

    def active(self, tenant: str | None = None) -> list[QueuedJob]:
        """Queued and running jobs (of ``tenant``), oldest first. Reads without the lock:
        each record is replaced atomically."""
        return [j for j in self._pending() if tenant is None or j.tenant == tenant]

    def of_tenant(self, tenant: str) -> list[QueuedJob]:
        """Every job of ``tenant``, finished ones included, newest first (GET /v1/jobs). Reads
        every record, as ``usage`` does; a record replaced meanwhile is read as either."""
        jobs: dict[str, QueuedJob] = {}
        for d in ("done", "pending"):  # a job in both (a finish in flight): done/ wins
            for p in (self.root / d).glob("*.json"):
                if p.stem in jobs:
                    continue
                try:
                    job = QueuedJob.from_json(p.read_text())
                except (OSError, ValueError, TypeError):
                    continue
                if job.tenant == tenant:
                    jobs[job.id] = job
        return sorted(jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)

    def page(self, tenant: str, *, status: str | None = None, adapter: str | None = None,
             limit: int = 20, after: str | None = None) -> tuple[list[QueuedJob], str | None]:
        """One page of ``tenant``'s jobs, newest first, and the cursor of the next page (the
        id of this page's last job) or None."""
        jobs = [j for j in self.of_tenant(tenant)
                if (status is None or j.status == status) and (adapter is None or j.adapter == adapter)]
        start = 0
        if after is not None:
            ids = [j.id for j in jobs]
            if after not in ids:
                raise bad_cursor(after)
            start = ids.index(after) + 1
        page = jobs[start:start + limit]
        more = start + limit < len(jobs)
        return page, page[-1].id if more and page else None

    def counts(self) -> dict[str, int]:
        """Queued and running jobs now (the ``tailor_jobs`` gauge)."""
        out = {s.value: 0 for s in ACTIVE}
        for job in self._pending():
            out[job.status.value] += 1
        return out

    def usage(self) -> dict[str, dict[str, int]]:
        """Jobs per tenant and state, finished ones included (the admin view). Reads every
        record: seconds for a store with a hundred thousand jobs."""
        out: dict[str, dict[str, int]] = {}
        for d in ("pending", "done"):
            for p in (self.root / d).glob("*.json"):
                try:
                    job = QueuedJob.from_json(p.read_text())
                except (OSError, ValueError, TypeError):
                    continue
                states = out.setdefault(job.tenant, {s.value: 0 for s in JobState})
                states[job.status.value] += 1
        return out

    # -- trainers --------------------------------------------------------------------------------
    def claim(self, owner: str, kinds: Iterable[str] | None = None) -> Lease | None:
        """Take the oldest queued job (of ``kinds``) with a fresh lease, after settling expired
        leases; None when there is nothing to run."""
        wanted = set(kinds) if kinds is not None else None
        with self._locked():
            now = self.clock()
            for job in self._pending():
                if job.status == JobState.RUNNING and (
                        (job.lease_expires_at is not None and job.lease_expires_at <= now)
                        or (job.lease_owner is not None and owner_gone(job.lease_owner))):
                    job = self._save(records.expire(job, now))
                if job.status != JobState.QUEUED or (wanted is not None and job.kind not in wanted):
                    continue
                try:
                    payload = json.loads(self._path("payloads", job.id).read_text())
                except (OSError, ValueError) as e:  # lost with the volume: fail, never retry
                    self._fail_unreadable(job, e)
                    continue
                token = uuid.uuid4().hex
                self._save(records.start(job, owner, token, now, self.lease_s))
                job.payload = payload
                return Lease(job, token, owner, job.lease_expires_at)
        return None

    def _fail_unreadable(self, job: QueuedJob, e: Exception) -> None:
        self._close(job, JobState.FAILED, error={"code": "internal_error", "message": (
            f"the job's payload (jobs/payloads/{job.id}.json) cannot be read "
            f"({type(e).__name__}); submit it again")})

    def _held(self, lease: Lease) -> QueuedJob:
        """The job, if ``lease`` still holds it (call under the lock); else LeaseLost."""
        return records.check_held(self._read("pending", lease.job.id), lease, self.clock())

    def renew(self, lease: Lease, progress: dict[str, int] | None = None,
              loss: float | None = None) -> Lease:
        """Extend the lease by ``lease_s`` (every ``lease_s / 3``, and with progress). Raises
        LeaseLost. The returned lease's ``job.cancel_requested`` says whether to stop."""
        with self._locked():
            job = self._held(lease)
            job.lease_expires_at = self.clock() + self.lease_s
            if progress is not None:
                job.progress, job.loss = progress, loss
            self._write("pending", job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def begin_publish(self, lease: Lease) -> Lease:
        """Mark the job as publishing while the lease holds. Raises Cancelled if a cancel came
        first. From here a cancel answers 409, and an expired lease fails the job instead of
        retrying it (a second attempt could publish a second version)."""
        with self._locked():
            job = self._held(lease)
            if job.cancel_requested:
                raise Cancelled("cancelled before publishing")
            job.publishing = True
            job.lease_expires_at = self.clock() + self.lease_s
            self._write("pending", job)
            return Lease(job, lease.token, lease.owner, job.lease_expires_at)

    def finish(self, lease: Lease, result: dict[str, Any] | None = None) -> QueuedJob:
        with self._locked():
            job = self._held(lease)
            if job.progress.get("total"):
                job.progress = {**job.progress, "step": job.progress["total"]}
            return self._close(job, JobState.SUCCEEDED, result=result)

    def fail(self, lease: Lease, code: str, message: str) -> QueuedJob:
        """The attempt failed for a reason retrying will not fix (bad data, a bug): fail now."""
        with self._locked():
            return self._close(self._held(lease), JobState.FAILED,
                               error={"code": code, "message": message})

    def retry(self, lease: Lease, code: str, message: str) -> QueuedJob:
        """The attempt was lost to something outside the job (its training process was
        killed): queue it again, or fail it with ``message`` when no attempts are left."""
        with self._locked():
            return self._save(records.requeue(self._held(lease), self.clock(), "retried", code,
                                              message))

    def cancelled(self, lease: Lease) -> QueuedJob:
        """The trainer stopped because cancel was requested."""
        with self._locked():
            return self._close(self._held(lease), JobState.CANCELLED)

    def release(self, lease: Lease) -> QueuedJob:
        """Give the job back without spending an attempt (a trainer shutting down cleanly). A
        job with a cancel requested is cancelled instead."""
        with self._locked():
            return self._save(records.release(self._held(lease), self.clock()))
